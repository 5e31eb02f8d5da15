"""The physicist's detail after page one: doses per structure and per lesion, the DVH with every limit and target,
the slice viewer, the prescription, the board's options and criteria, the case, the flags with their values, the
thresholds used (this procedure's first, all of them folded) and provenance.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .doses import chosen_doses, key_doses
from .figures import dvh_figure, img_tag
from .fmt import (
    esc,
    field_label,
    gbq,
    gy,
    kg,
    ml,
    percent,
    sig3,
    structure_label,
    threshold_label,
    threshold_value,
    value_text,
)
from .page_one import flag_title, severity_badge

if TYPE_CHECKING:  # pragma: no cover
    from ..plan_model import Plan

__all__ = ["detail_sections", "relevant_thresholds", "PARTIAL_VOLUME_DIAMETER_MM"]

#: Fallback (plans whose thresholds lack ``partial_volume_warning_ml``): equivalent-sphere diameter (mm) under which
#: a lesion's mean dose carries a partial-volume note; objects under 2-3 x the image FWHM lose mean activity (Soret M
#: et al., J Nucl Med 48:932, 2007; Dewaraja YK et al., MIRD Pamphlet No. 23, J Nucl Med 2012). [U] A plan's own
#: threshold ``partial_volume_warning_ml`` (issue 13) takes precedence.
PARTIAL_VOLUME_DIAMETER_MM = 30.0


def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{html.escape(title)}</h2>{body}</section>'


def _kv(rows: Iterable[tuple[str, str]], cls: str = "kv") -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>" for k, v in rows)
    return f'<table class="{cls}"><tbody>{body}</tbody></table>' if body else ""


# ---------------------------------------------------------------------------------------------- doses
def _equivalent_diameter_mm(volume_ml: float) -> float:
    return (6.0 * volume_ml * 1000.0 / math.pi) ** (1.0 / 3.0) if volume_ml > 0 else 0.0


def _doses_section(plan: Plan, pv_diameter_mm: float) -> str:
    d = plan.dosimetry
    if d is None:
        return ""
    c, v = d.compartment, d.voxel
    chosen = chosen_doses(plan)
    kd = key_doses(plan)
    krows = "".join(
        f'<tr data-key="{k.key}"><td>{esc(k.label)}</td><td class="num dose-value">{gy(k.value_gy)}</td>'
        f'<td class="num">{"–" if k.bound_gy is None else gy(k.bound_gy)}</td><td>{esc(k.bound_label)}</td>'
        f'<td><span class="status status-{k.status}">{esc(k.status_text)}</span></td>'
        f'<td class="evidence">{esc(k.bound_source)}</td></tr>'
        for k in kd
    )
    body = (
        f'<p>{esc(kd[0].definition if kd else "")} These are the doses on page one and the doses the rules checked.'
        "</p>"
        '<table class="key-doses-detail"><thead><tr><th>Structure</th><th class="num">Dose (Gy)</th>'
        '<th class="num">Bound (Gy)</th><th>Bound in force</th><th>Result</th><th>Source</th></tr></thead>'
        f"<tbody>{krows}</tbody></table>"
    )
    rows = [
        ("tumour", c.tumor_gy, v.tumor_gy if v else None),
        ("non-tumour liver", c.normal_liver_gy, v.normal_liver_gy if v else None),
        ("perfused liver", c.perfused_gy, v.perfused_gy if v else None),
        ("perfused non-tumour liver", c.perfused_normal_liver_gy, v.perfused_normal_liver_gy if v else None),
        ("lung", c.lung_gy, v.lung_gy if v else None),
    ]
    vox_head = f"voxel ({html.escape(d.method)})" if v is not None else "voxel"
    in_use = "voxel" if chosen is v and v is not None else "compartment"
    body_rows = "".join(
        f"<tr><th>{html.escape(name)}</th><td class='num'>{gy(a)}</td><td class='num'>{gy(b)}</td></tr>"
        for name, a, b in rows
        if a is not None or b is not None
    )
    body += (
        "<h3>Compartment model and voxel map side by side</h3>"
        f'<table class="doses"><thead><tr><th>mean absorbed dose (Gy)</th>'
        f'<th class="num">compartment ({html.escape(c.source)})</th><th class="num">{vox_head}</th></tr></thead>'
        f"<tbody>{body_rows}</tbody></table>"
        f"<p class='note'>The {in_use} column is the one in force (page one, the rules).</p>"
    )
    lesions = getattr(d, "lesions", None)
    if d.structures:
        body += _structure_table(plan, pv_diameter_mm, own_pv_note=not lesions)
    if lesions:
        body += lesion_table(lesions)
    return _section("doses", "Absorbed doses", body)


def lesion_table(lesions: list[Any]) -> str:
    """Issue 13's per-lesion records (name, volume, equivalent diameter, perfused fraction, voxel-map mean, local
    deposition mean, partial-volume warning, note), as the plan computed them."""
    rows = "".join(
        f'<tr class="lesion{" pv-warning" if x.partial_volume_warning else ""}"><td>{esc(structure_label(x.name))}</td>'
        f"<td class='num'>{ml(x.volume_ml)}</td><td class='num'>{sig3(x.equivalent_diameter_mm)}</td>"
        f"<td class='num'>{percent(x.perfused_fraction, 0)}</td><td class='num'>{gy(x.mean_gy)}</td>"
        f"<td class='num'>{gy(x.local_deposition_gy)}</td>"
        f"<td class='num'>{gy(getattr(x, 'recovery_corrected_gy', None))}</td>"
        f"<td class='note'>{esc(x.note) if x.note else ('partial-volume effect: mean dose underestimated' if x.partial_volume_warning else '')}"
        "</td></tr>"
        for x in lesions
    )
    return (
        "<h3>Per lesion</h3>"
        '<table class="lesions"><thead><tr><th>Lesion</th><th class="num">Volume (mL)</th>'
        '<th class="num">Diameter (mm)</th><th class="num">Perfused</th><th class="num">Mean, voxel map (Gy)</th>'
        '<th class="num">Mean, local deposition (Gy)</th><th class="num">Recovery-corrected (Gy)</th><th>Note</th>'
        f"</tr></thead><tbody>{rows}</tbody></table>"
    )


def _structure_table(plan: Plan, pv_diameter_mm: float, own_pv_note: bool = True) -> str:
    d = plan.dosimetry
    assert d is not None
    dkeys = ("D95", "D70", "D50", "D2")
    head = "".join(f'<th class="num">{k}</th>' for k in dkeys)
    rows = []
    for s in d.structures:
        rec = d.dvh.get(s.structure)
        dvals = "".join(f"<td class='num'>{gy(rec.d_gy.get(k)) if rec else '–'}</td>" for k in dkeys)
        note = ""
        if own_pv_note and s.structure.startswith(("tumor", "tumour")) and s.structure not in ("tumors", "tumours"):
            diam = _equivalent_diameter_mm(s.volume_ml)
            limit_ml = getattr(plan.thresholds, "partial_volume_warning_ml", None)
            small = s.volume_ml < limit_ml if limit_ml is not None else diam < pv_diameter_mm
            if small:
                note = (f"{ml(s.volume_ml)} mL ({diam:.0f} mm equivalent sphere): partial-volume effect likely, "
                        "mean dose underestimated")
        lesion = s.structure not in ("liver", "normal_liver", "perfused", "perfused_normal_liver", "tumors",
                                     "perfused_tumors", "lungs", "lung")
        rows.append(
            f'<tr class="{"lesion" if lesion else "structure"}"><td>{esc(structure_label(s.structure))}</td>'
            f"<td class='num'>{ml(s.volume_ml)}</td><td class='num'>{kg(s.mass_kg)}</td>"
            f"<td class='num'>{gy(s.mean_gy)}</td>{dvals}<td class='num'>{gy(s.bed_gy)}</td>"
            f"<td class='note'>{esc(note)}</td></tr>"
        )
    return (
        "<h3>Per structure and per lesion (voxel map)</h3>"
        '<table class="structures"><thead><tr><th>Structure</th><th class="num">Volume (mL)</th>'
        f'<th class="num">Mass (kg)</th><th class="num">Mean (Gy)</th>{head}<th class="num">BED (Gy)</th>'
        f"<th>Note</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        "<p class='note'>D<i>x</i>: the least dose to the hottest <i>x</i> % of the volume. BED: biologically "
        "effective dose as the plan computed it.</p>"
    )


def _dvh_section(plan: Plan) -> str:
    d = plan.dosimetry
    if d is None or not d.dvh:
        return ""
    fig = dvh_figure(plan)
    body = ""
    if fig is not None:
        body += img_tag(fig, "cumulative dose-volume histograms",
                        "Cumulative DVH of the main structures (every structure is in the tables). Dashed: every "
                        "limit and target in force, labelled; they bound mean doses (page one), drawn here for "
                        "reference.", "dvh-plot")
    keys_d = sorted({k for r in d.dvh.values() for k in r.d_gy}, key=_metric_order)
    keys_v = sorted({k for r in d.dvh.values() for k in r.v_percent}, key=_metric_order)
    head = "".join(f'<th class="num">{html.escape(k)}</th>' for k in keys_d)
    rows = "".join(
        f"<tr><td>{esc(structure_label(name))}</td><td class='num'>{ml(r.volume_ml)}</td>"
        f"<td class='num'>{gy(r.mean_gy)}</td><td class='num'>{gy(r.min_gy)}</td>"
        f"<td class='num'>{gy(r.max_gy)}</td>"
        + "".join(f"<td class='num'>{gy(r.d_gy.get(k))}</td>" for k in keys_d)
        + "</tr>"
        for name, r in d.dvh.items()
    )
    body += (
        "<h3>Dose (Gy): mean, range and D<i>x</i></h3>"
        '<table class="dvh-metrics dvh-dose"><thead><tr><th>Structure</th><th class="num">Volume (mL)</th>'
        '<th class="num">Mean</th><th class="num">Min</th><th class="num">Max</th>'
        f"{head}</tr></thead><tbody>{rows}</tbody></table>"
    )
    if keys_v:
        head_v = "".join(f'<th class="num">{html.escape(k)}</th>' for k in keys_v)
        rows_v = "".join(
            f"<tr><td>{esc(structure_label(name))}</td>"
            + "".join(f"<td class='num'>{sig3(r.v_percent.get(k))}</td>" for k in keys_v)
            + "</tr>"
            for name, r in d.dvh.items()
        )
        body += (
            "<h3>Volume (%) receiving at least the stated dose</h3>"
            '<table class="dvh-metrics dvh-volume"><thead><tr><th>Structure</th>'
            f"{head_v}</tr></thead><tbody>{rows_v}</tbody></table>"
        )
    return _section("dvh", "Dose-volume histograms", body)


def _metric_order(key: str) -> tuple[float, str]:
    digits = "".join(ch for ch in key if ch.isdigit() or ch == ".")
    try:
        return (-float(digits), key)
    except ValueError:
        return (0.0, key)


# ---------------------------------------------------------------------------------------------- prescription
def _prescription_section(plan: Plan) -> str:
    d = plan.dosimetry
    if d is None:
        return _section("prescription", "Prescription", "<p>No radioembolization: no activity prescription.</p>")
    rx = d.prescription
    rows = [
        ("Model", esc(rx.method.upper())),
        ("Prescribed activity (GBq)", gbq(rx.activity_gbq)),
        ("Activity for the target (GBq)", gbq(rx.activity_for_target_gbq)),
        ("Largest activity within limits (GBq)", gbq(rx.max_safe_activity_gbq)),
        ("Binding constraint", esc(rx.binding_constraint)),
        ("Lung shunt activity reduction", percent(rx.lung_shunt_reduction_fraction, 0)),
        ("K (Gy kg / GBq)", f"{rx.k_gy_kg_per_gbq:.2f}"),
        ("Lung shunt fraction", percent(d.lung_shunt_fraction)),
        ("Tumour-to-normal ratio", sig3(d.tumor_to_normal_ratio)),
    ]
    body = _kv(rows)
    if rx.conflict:
        body += ('<p class="conflict">Conflict: the target cannot be reached within the limits; the activity is '
                 "capped by the binding constraint.</p>")
    if rx.explanation:
        body += f"<p>{esc(rx.explanation)}</p>"
    if d.delivery is not None:
        body += "<h3>Delivery</h3><p>" + esc(d.delivery.explanation) + "</p>"
    if rx.inputs:
        body += "<h3>Model inputs</h3>" + _kv((field_label(k), _input_value(k, v)) for k, v in rx.inputs.items())
    lim = d.limits.model_dump(mode="json")
    body += "<h3>Limits in force</h3>" + _kv(
        (field_label(k), _input_value(k, v)) for k, v in lim.items() if v is not None)
    if d.notes:
        body += "<h3>Notes</h3><ul>" + "".join(f"<li>{esc(n)}</li>" for n in d.notes) + "</ul>"
    return _section("prescription", "Prescription", body)


def _input_value(key: str, value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return value_text(value)
    if isinstance(value, (int, float)):
        if key.endswith("_fraction"):
            return percent(value)
        if key.endswith("_gbq"):
            return gbq(value)
        if key.endswith("_gy"):
            return gy(value)
        return sig3(value) if isinstance(value, float) else str(value)
    return value_text(value)


# ---------------------------------------------------------------------------------------------- board
def _board_section(plan: Plan) -> str:
    b = plan.board
    if b is None:
        return ""
    parts = []
    for opt in b.options:
        crit = "".join(
            f'<tr class="criterion-{html.escape(c.status.value)}"><td>{esc(c.label)}</td><td>{esc(c.status.value)}'
            f"</td><td>{esc(c.value)}</td><td>{esc(c.threshold)}</td><td class='evidence'>{esc(c.source)}</td></tr>"
            for c in opt.criteria
        )
        table = ('<table class="criteria"><thead><tr><th>Criterion</th><th>Status</th><th>Case value</th>'
                 f"<th>Requirement</th><th>Source</th></tr></thead><tbody>{crit}</tbody></table>") if crit else ""
        status = getattr(opt.status, "value", opt.status)
        opened = " open" if status == "recommended" else ""
        parts.append(f'<details class="board-option option-{esc(status)}"{opened}><summary><b>{esc(opt.title)}: '
                     f"{esc(status.replace('_', ' '))}</b> — {esc(opt.reason)}</summary>{table}</details>")
    gaps = list(b.data_gaps) + [w for w in b.recommendation.would_change if w not in b.data_gaps]
    if gaps:
        parts.append("<h3>What would change the recommendation</h3><ul class='would-change'>"
                     + "".join(f"<li>{esc(g)}</li>" for g in gaps) + "</ul>")
    if b.recommendation.steps:
        parts.append("<h3>Recommended steps in full</h3><ol class='board-steps-full'>" + "".join(
            f"<li><b>{esc(st.action)}</b>: {esc(st.reason)}"
            + (f" <span class='evidence'>({esc('; '.join(st.citations))})</span>" if st.citations else "")
            + "</li>" for st in sorted(b.recommendation.steps, key=lambda st: st.order)) + "</ol>")
    liver = b.liver
    lrows = [("ALBI", f"{sig3(liver.albi_score)} (grade {esc(liver.albi_grade)})" if liver.albi_score is not None
              else "–"), ("Cirrhosis", value_text(liver.cirrhosis)), ("Compensated", value_text(liver.compensated))]
    lrows += [(f"{t.territory}: prior sessions {t.prior_sessions}",
               f"non-tumour liver {gy(t.cumulative_normal_liver_gy)} Gy, lung {gy(t.cumulative_lung_gy)} Gy")
              for t in liver.territory_doses]
    parts.append("<h3>Liver reserve</h3>" + _kv(lrows))
    if b.consent:
        rows = "".join(f"<tr><td>{esc(c.option_key.replace('_', ' '))}</td><td>{esc(c.outcome)}</td>"
                       f"<td>{esc(c.value)}</td><td class='evidence'>{esc(c.source)}"
                       + (f" ({esc(c.caveat)})" if c.caveat else "") + "</td></tr>" for c in b.consent)
        parts.append('<h3>Consent numbers</h3><table class="consent"><thead><tr><th>Option</th><th>Outcome</th>'
                     f"<th>Value</th><th>Source</th></tr></thead><tbody>{rows}</tbody></table>")
    if b.follow_up:
        rows = "".join(f"<tr><td>{esc(f.date)}</td><td>{esc(f.what)}</td><td class='evidence'>{esc(f.source)}</td>"
                       "</tr>" for f in b.follow_up)
        parts.append('<h3>Follow-up</h3><table class="follow-up"><thead><tr><th>Date</th><th>What</th>'
                     f"<th>Source</th></tr></thead><tbody>{rows}</tbody></table>")
    return _section("board", "Tumour board: every option and its criteria", "<p class='note'>Open an option to "
                    "see each criterion, the case value it read and its source.</p>" + "".join(parts))


# ---------------------------------------------------------------------------------------------- case, procedure
def _case_section(plan: Plan) -> str:
    data = plan.case.model_dump(mode="json")
    patient = dict(data.get("patient", {}))
    priors = patient.pop("prior_treatments", []) or []
    scalars = [(field_label(k), value_text(v)) for k, v in patient.items() if not isinstance(v, (dict, list))]
    parts = ['<div class="grid2"><div><h3>Patient</h3>', _kv(scalars)]
    for key, value in patient.items():
        if isinstance(value, dict):
            parts.append(f"<h3>{esc(field_label(key))}</h3>")
            parts.append(_kv((field_label(k), value_text(v)) for k, v in value.items()))
    parts.append("</div></div>")
    parts.append("<h3>Treatment history</h3>")
    if priors:
        cols = ["kind", "date"] + sorted({k for p in priors for k in p} - {"kind", "date"})
        head = "".join(f"<th>{esc(field_label(c))}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{value_text(p.get(c))}</td>" for c in cols) + "</tr>" for p in priors)
        parts.append(f'<table class="history"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
    else:
        parts.append("<p>No earlier treatment recorded.</p>")
    dosi = data.get("dosimetry")
    if isinstance(dosi, dict):
        parts.append("<h3>Dosimetry inputs</h3>")
        parts.append(_kv((field_label(k), value_text(v)) for k, v in dosi.items() if v is not None))
    return _section("case", "Case", "".join(parts))


def _procedure_section(plan: Plan) -> str:
    proc = plan.procedure
    rows = [("Procedure", esc(proc.kind)), ("Territory", esc(proc.territory)), ("Device", esc(proc.device)),
            ("Standard protocol", esc(proc.standard_protocol))]
    body = _kv(rows)
    if proc.parameters:
        body += "<h3>Parameters</h3>" + _kv((field_label(k), value_text(v)) for k, v in proc.parameters.items())
    if proc.deviations:
        items = "".join(f"<li>{esc(x)}</li>" for x in proc.deviations)
        body += f'<h3>Deviations from the standard protocol</h3><ul class="deviations">{items}</ul>'
    else:
        body += "<p>No deviation from the standard protocol.</p>"
    seq = plan.sequence
    body += "<h3>Sequencing (TAE → TACE → TARE)</h3>" + _kv([
        ("Follows the ladder", value_text(seq.follows_ladder)),
        ("Skipped steps", value_text(list(seq.skipped))),
        ("Justifications", value_text(list(seq.justifications))),
        ("Suggested next step", esc(seq.suggested_next)),
    ])
    if seq.explanation:
        body += f"<p>{esc(seq.explanation)}</p>"
    return _section("procedure", "Procedure and protocol", body)


# ---------------------------------------------------------------------------------------------- flags
def _context_text(context: dict[str, Any]) -> str:
    parts = []
    for k, v in context.items():
        if v is None or v == [] or v == {}:
            continue
        label = field_label(k)
        parts.append(f"{esc(label[:1].lower() + label[1:])}: {_input_value(k, v)}")
    return "; ".join(parts)


def _flags_section(plan: Plan) -> str:
    flags = sorted(plan.flags, key=lambda f: (-f.severity.rank, f.code))
    if not flags:
        return _section("flags", "Flags", "<p>No rule raised a flag.</p>")
    rows = []
    for f in flags:
        ctx = f'<div class="context">Values: {_context_text(f.context)}</div>' if f.context else ""
        rows.append(
            f'<tr class="flag sev-row-{html.escape(f.severity.value)}"><td>{severity_badge(f.severity.value)}</td>'
            f"<td>{html.escape(flag_title(f.code))}<div class='note'>{html.escape(f.code)}</div></td>"
            f'<td>{html.escape(f.message)}<div class="evidence">Evidence: {html.escape(f.evidence)}</div>{ctx}</td></tr>'
        )
    table = (
        '<table class="flags"><thead><tr><th>Severity</th><th>Finding</th><th>What, evidence and values</th></tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )
    return _section("flags", "Flags in full", table)


# ---------------------------------------------------------------------------------------------- thresholds
_COMMON = ("bilirubin_high", "tumor_burden", "ecog", "platelets", "inr", "wbc", "egfr", "flr", "transplant",
           "hepatic_reserve")


def relevant_thresholds(plan: Plan) -> set[str]:
    """Names of the thresholds that bear on this plan's procedure (and device): shown first, unfolded."""
    kind = plan.procedure.kind
    device = plan.procedure.device
    keep: set[str] = set()
    for row in plan.thresholds.describe():
        n = str(row["name"])
        if n.startswith(_COMMON):
            keep.add(n)
        elif kind == "TARE":
            if n.startswith("lung_") or (device and (n.startswith(f"{device}_") or n.startswith(f"lsf_{device}")
                                                     or n == f"bilirubin_{device}_caution_mg_dl")):
                keep.add(n)
            if device == "resin" and n.startswith("resin_"):
                keep.add(n)
        elif kind in ("TACE", "DEB_TACE"):
            if n.startswith(("doxorubicin", "protocol_")):
                keep.add(n)
        elif kind == "TAE" and n.startswith(("protocol_particle", "protocol_stasis")):
            keep.add(n)
        if row.get("overridden"):
            keep.add(n)
    return keep


def _threshold_rows(rows: list[dict[str, Any]]) -> str:
    out = []
    for r in rows:
        value, unit = threshold_value(r.get("value"), str(r.get("unit", "")))
        out.append(
            f'<tr class="{"overridden" if r.get("overridden") else ""}"><td>{esc(threshold_label(str(r["name"])))}'
            f"<div class='note'><code>{esc(r['name'])}</code></div></td>"
            f"<td class='num'>{value}</td><td>{esc(unit)}</td>"
            f"<td>{'overridden' if r.get('overridden') else 'default'}</td>"
            f"<td class='evidence'>{esc(r.get('source', ''))}</td></tr>"
        )
    return (
        '<table class="thresholds"><thead><tr><th>Threshold</th><th class="num">Value</th><th>Unit</th>'
        f"<th>Origin</th><th>Source</th></tr></thead><tbody>{''.join(out)}</tbody></table>"
    )


def _thresholds_section(plan: Plan) -> str:
    rows = plan.thresholds.describe()
    relevant = relevant_thresholds(plan)
    first = [r for r in rows if r["name"] in relevant]
    n_over = sum(1 for r in rows if r.get("overridden"))
    body = (f"<p>{len(rows)} thresholds, {n_over} overridden (highlighted); {len(first)} bear on this "
            f"{esc(plan.procedure.kind)}" + (f" ({esc(plan.procedure.device)})" if plan.procedure.device else "")
            + " plan and are listed here.</p>")
    body += f'<div class="relevant-thresholds">{_threshold_rows(first)}</div>'
    body += ("<details class='all-thresholds'><summary>Show every threshold with its source "
             f"({len(rows)})</summary>{_threshold_rows(rows)}</details>")
    return _section("thresholds", "Thresholds used", body)


# ---------------------------------------------------------------------------------------------- provenance
def _provenance_section(plan: Plan) -> str:
    p = plan.provenance
    rows = [("embplan version", esc(p.embplan_version)), ("Python", esc(p.python_version)),
            ("Plan created (UTC)", esc(p.created_utc))]
    rows += [(name, esc(version)) for name, version in sorted(p.dependency_versions.items())]
    body = _kv(rows)
    if p.rules_run:
        body += f"<p>Rules run ({len(p.rules_run)}): {esc(', '.join(p.rules_run))}.</p>"
    if p.kernel:
        kernel_json = json.dumps(p.kernel, indent=2, ensure_ascii=False, sort_keys=True, default=str)
        body += f"<details><summary>Dose kernel and its parameters</summary><pre>{esc(kernel_json)}</pre></details>"
    case_json = json.dumps(plan.case_source, indent=2, ensure_ascii=False, default=str)
    body += f"<details><summary>The case as given</summary><pre>{esc(case_json)}</pre></details>"
    return _section("provenance", "Provenance", body)


def detail_sections(plan: Plan, viewer_body: str, *, pv_diameter_mm: float = PARTIAL_VOLUME_DIAMETER_MM) -> list[str]:
    """The detail sections in reading order (HTML strings; empty ones dropped)."""
    viewer = _section("slices", "Slice viewer: CT, dose and structures", viewer_body) if viewer_body else ""
    sections = [
        _doses_section(plan, pv_diameter_mm),
        _dvh_section(plan),
        viewer,
        _prescription_section(plan),
        _board_section(plan),
        _flags_section(plan),
        _procedure_section(plan),
        _case_section(plan),
        _thresholds_section(plan),
        _provenance_section(plan),
    ]
    return [s for s in sections if s]
