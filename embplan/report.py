"""The plan report: one self-contained HTML file (inline CSS, figures as embedded PNG) a tumour board can read.

:func:`render_report` returns the HTML text; :func:`write_report` writes it atomically. The figures
(:func:`dvh_figure`, :func:`dose_slice_figure`) are matplotlib figures drawn off-screen (Agg canvas, no pyplot
state). Every piece of case text is escaped.

Sections: header (patient, procedure, dates, highest severity), flags by severity with evidence, case summary,
procedure and protocol, sequencing, prescription, dose table (compartment model and voxel side by side),
DVH, dose slices with structure outlines and isodose lines, thresholds used, provenance, disclaimer.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import EmbplanError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from .plan_model import Plan

__all__ = [
    "render_report",
    "write_report",
    "dvh_figure",
    "dose_slice_figure",
    "DEFAULT_ISODOSE_LEVELS_GY",
    "OUTLINE_STRUCTURES",
    "DISCLAIMER",
]

#: Isodose lines drawn when the plan names no limit or target (display only, Gy): 40 Gy resin unilobar
#: non-tumour liver limit (EANM 2022 Table 3); 75 Gy glass whole non-tumour liver limit (EANM 2022 Table 2);
#: 120 Gy glass perfused non-tumour liver limit and DOSISPHERE-01 standard lobar dose (EANM 2022;
#: Garin, Lancet Gastroenterol Hepatol 2021); 205 Gy glass HCC tumour target (EANM 2022 Table 2; DOSISPHERE-01).
DEFAULT_ISODOSE_LEVELS_GY: tuple[float, ...] = (40.0, 75.0, 120.0, 205.0)

#: Structures outlined on the dose slices when present, in drawing order.
OUTLINE_STRUCTURES: tuple[str, ...] = ("liver", "perfused", "tumors", "tumor", "tumour", "lungs", "lung")
#: Structures drawn on the DVH plot when present (every structure stays in the DVH tables); when none of these
#: is present, every structure is drawn.
DVH_PLOT_STRUCTURES: tuple[str, ...] = (
    "tumors", "tumor", "tumour", "perfused_tumors", "normal_liver", "perfused_normal_liver", "perfused", "lungs",
    "lung",
)

DISCLAIMER = (
    "embplan is research software. This report supports, and does not replace, the judgement of the treating "
    "team: every dose, limit and flag must be checked against the patient's images, the device's instructions "
    "for use and local protocols before treatment. Doses are mean absorbed doses computed from the stated "
    "inputs and models; their uncertainty is not shown."
)

_SEVERITY_COLOURS = {
    "contraindication": ("#7f0000", "#ffffff"),
    "warning": ("#c62828", "#ffffff"),
    "caution": ("#f9a825", "#000000"),
    "info": ("#1565c0", "#ffffff"),
}
_STRUCTURE_COLOURS = ("#00e5ff", "#76ff03", "#ff4081", "#ffea00", "#e040fb", "#ff9100", "#ffffff")

_CSS = """
:root { --ink:#1b1f24; --muted:#5b6570; --line:#d5dae0; --band:#f3f5f7; }
* { box-sizing: border-box; }
body { font-family: -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--ink);
       margin: 0 auto; max-width: 1100px; padding: 24px 28px 48px; line-height: 1.45; font-size: 14px; }
header { border-bottom: 3px solid var(--ink); padding-bottom: 12px; margin-bottom: 8px; }
header h1 { margin: 0 0 4px; font-size: 24px; }
header .meta { color: var(--muted); }
h2 { font-size: 18px; margin: 28px 0 8px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 15px; margin: 16px 0 6px; }
table { border-collapse: collapse; margin: 6px 0 12px; width: 100%; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--band); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
table.kv { width: auto; min-width: 50%; }
table.kv th { width: 16em; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600; font-size: 12px;
         text-transform: uppercase; letter-spacing: .03em; white-space: nowrap; }
.evidence { color: var(--muted); font-size: 12.5px; margin-top: 3px; }
.context { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12px; color: var(--muted); }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 0 24px; }
figure { margin: 8px 0 16px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 12.5px; }
.note { color: var(--muted); font-size: 12.5px; }
.conflict { color: #c62828; font-weight: 600; }
.overridden { background: #fff8e1; }
pre { background: var(--band); padding: 8px; overflow-x: auto; font-size: 12px; white-space: pre-wrap; }
details summary { cursor: pointer; color: var(--muted); }
footer { margin-top: 32px; padding-top: 8px; border-top: 1px solid var(--line); color: var(--muted); font-size: 12.5px; }
@media print { body { max-width: none; padding: 0; } h2 { break-after: avoid; } figure, table { break-inside: avoid; } }
"""


# ====================================================================================== small helpers
def _e(value: Any) -> str:
    """Escaped text of any value."""
    if value is None:
        return "&ndash;"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return html.escape(f"{value:.6g}")
    if isinstance(value, (list, tuple)):
        return html.escape(", ".join(_plain(v) for v in value)) if value else "&ndash;"
    if isinstance(value, Mapping):
        return html.escape(_compact(value)) if value else "&ndash;"
    return html.escape(str(getattr(value, "value", value)))


def _compact(mapping: Mapping[str, Any]) -> str:
    """``{"scope": "lobar", "lobe": "right", "segments": None}`` -> ``scope lobar, lobe right``."""
    parts = []
    for k, v in mapping.items():
        if v is None or v == [] or v == {}:
            continue
        text = _compact(v) if isinstance(v, Mapping) else _plain(v)
        parts.append(f"{_label(str(k))} {text}" if not isinstance(v, Mapping) else f"{_label(str(k))} ({text})")
    return "; ".join(parts)


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, Mapping):
        return _compact(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(_plain(v) for v in value)
    return str(getattr(value, "value", value))


def _num(value: float | None, digits: int | None = None) -> str:
    if value is None or not math.isfinite(value):
        return "–"
    if digits is not None:
        return f"{value:.{digits}f}"
    if value == 0:
        return "0"
    mag = abs(value)
    if mag >= 100:
        return f"{value:.0f}"
    if mag >= 10:
        return f"{value:.1f}"
    if mag >= 0.01:
        return f"{value:.3g}"
    return f"{value:.3g}"


def _badge(severity: str) -> str:
    bg, fg = _SEVERITY_COLOURS.get(severity, ("#555", "#fff"))
    return f'<span class="badge sev-{html.escape(severity)}" style="background:{bg};color:{fg}">{html.escape(severity)}</span>'


def _kv_table(rows: Iterable[tuple[str, Any]], cls: str = "kv") -> str:
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="{cls}"><tbody>{body}</tbody></table>' if body else ""


def _label(key: str) -> str:
    return key.replace("_", " ")


def _figure_png(fig: Figure, *, dpi: int = 110) -> str:
    """A figure as a base64 PNG data URI (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _img(fig: Figure, alt: str, caption: str, cls: str) -> str:
    return (
        f'<figure class="{cls}"><img alt="{html.escape(alt)}" src="{_figure_png(fig)}">'
        f"<figcaption>{caption}</figcaption></figure>"
    )


# ====================================================================================== figures
def dvh_figure(plan: Plan, structures: Sequence[str] | None = None) -> Figure | None:
    """Cumulative DVHs (None when the plan has none): ``structures`` (default: those of
    :data:`DVH_PLOT_STRUCTURES` present, else all)."""
    from matplotlib.figure import Figure

    d = plan.dosimetry
    if d is None or not d.dvh:
        return None
    if structures is None:
        names = [n for n in DVH_PLOT_STRUCTURES if n in d.dvh] or list(d.dvh)
    else:
        names = [n for n in structures if n in d.dvh]
    fig = Figure(figsize=(9.0, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    for i, (name, rec) in enumerate((n, d.dvh[n]) for n in names):
        dose = np.asarray(rec.dose_gy, dtype=float)
        vol = 100.0 * np.asarray(rec.volume_fraction, dtype=float)
        if dose.size == 0:
            continue
        ax.plot(dose, vol, drawstyle="steps-post", lw=2, color=f"C{i % 10}",
                label=f"{name} (mean {rec.mean_gy:.0f} Gy, {rec.volume_ml:.0f} mL)")
    limits = d.limits
    marks = [(limits.normal_liver_limit_gy, "non-tumour liver limit")]
    if limits.perfused_normal_liver_limit_gy is not None:
        marks.append((limits.perfused_normal_liver_limit_gy, "perfused non-tumour liver limit"))
    for value, label in marks:
        ax.axvline(value, color="0.35", ls="--", lw=1)
        ax.annotate(f"{label} {value:.0f} Gy", (value, 101), fontsize=8, color="0.3", rotation=0,
                    ha="left", va="bottom", annotation_clip=False)
    ax.set_xlabel("absorbed dose (Gy)")
    ax.set_ylabel("volume receiving at least that dose (%)")
    ax.set_ylim(0, 105)
    ax.set_xlim(left=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def _isodose_levels(plan: Plan, levels: Sequence[float] | None, max_dose: float) -> list[float]:
    if levels is None:
        found: set[float] = set()
        d = plan.dosimetry
        if d is not None:
            found.add(float(d.limits.normal_liver_limit_gy))
            if d.limits.perfused_normal_liver_limit_gy is not None:
                found.add(float(d.limits.perfused_normal_liver_limit_gy))
            found.add(float(d.limits.tumor_target_gy))
            for key in ("tumor_dose_target_gy", "perfused_dose_target_gy"):
                value = d.prescription.inputs.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
                    found.add(float(value))
        levels = sorted(found) if found else list(DEFAULT_ISODOSE_LEVELS_GY)
    return [float(v) for v in sorted(set(levels)) if 0 < v < max_dose]


def _pick_dose(plan: Plan, method: str | None) -> tuple[str, np.ndarray] | None:
    voxel = plan.voxel
    if voxel is None:
        return None
    maps = voxel.dose_maps()
    if not maps:
        return None
    if method is None and plan.dosimetry is not None and plan.dosimetry.method in maps:
        method = plan.dosimetry.method
    if method is None or method not in maps:
        method = sorted(maps)[0]
    return method, np.asarray(maps[method], dtype=float)


def _outline_masks(masks: Mapping[str, np.ndarray], names: Sequence[str] | None) -> list[tuple[str, np.ndarray]]:
    if names is None:
        chosen = [n for n in OUTLINE_STRUCTURES if n in masks]
        if not any(n.startswith("tumo") for n in chosen):
            chosen += sorted(n for n in masks if n.startswith("tumo"))[:4]
    else:
        chosen = [n for n in names if n in masks]
    return [(n, np.asarray(masks[n], dtype=bool)) for n in chosen]


def _centre_index(dose: np.ndarray, masks: Mapping[str, np.ndarray]) -> tuple[int, int, int]:
    """Dose-weighted centre of the tumour voxels (or of the whole dose map), as a (z, y, x) index."""
    tumour = None
    for name in ("tumors", "tumor", "tumour"):
        if name in masks and np.any(masks[name]):
            tumour = np.asarray(masks[name], dtype=bool)
            break
    if tumour is None:
        parts = [np.asarray(m, dtype=bool) for n, m in masks.items() if n.startswith("tumo")]
        if parts:
            tumour = np.logical_or.reduce(parts)
    weights = np.where(tumour, dose, 0.0) if tumour is not None and tumour.any() else dose
    weights = np.clip(np.nan_to_num(weights), 0.0, None)
    if weights.sum() <= 0:
        return tuple(n // 2 for n in dose.shape)  # type: ignore[return-value]
    idx = np.indices(dose.shape, dtype=float)
    c = [(idx[a] * weights).sum() / weights.sum() for a in range(3)]
    return tuple(int(np.clip(round(v), 0, n - 1)) for v, n in zip(c, dose.shape, strict=True))  # type: ignore[return-value]


def dose_slice_figure(
    plan: Plan,
    *,
    method: str | None = None,
    isodose_levels_gy: Sequence[float] | None = None,
    structures: Sequence[str] | None = None,
) -> Figure | None:
    """Axial and coronal dose slices through the dose-weighted tumour centre (None without a dose map).

    The dose colour map (Gy) lies over the CT (when the plan has ``ct_hu``); structure outlines are mask
    contours, dashed lines are isodoses at ``isodose_levels_gy`` (default: the plan's limits and targets, else
    :data:`DEFAULT_ISODOSE_LEVELS_GY`). Display follows the radiological convention for an LPS grid with the
    identity direction: axial slices anterior up and patient left on the right; coronal slices superior up.
    """
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    picked = _pick_dose(plan, method)
    if picked is None:
        return None
    assert plan.voxel is not None
    method, dose = picked
    voxel = plan.voxel
    grid = voxel.grid
    masks = voxel.masks()
    ct = voxel.arrays.get("ct_hu")
    cz, cy, cx = _centre_index(dose, masks)
    dz, dy, dx = grid.spacing_mm
    nz, ny, nx = grid.shape
    vmax = float(np.nanmax(dose)) if dose.size else 0.0
    if not math.isfinite(vmax) or vmax <= 0:
        vmax = 1.0
    levels = _isodose_levels(plan, isodose_levels_gy, vmax)
    outlines = _outline_masks(masks, structures)
    norm = Normalize(vmin=0.0, vmax=vmax)
    views = [
        # (title, dose slice, ct slice, mask slicer, extent (left, right, bottom, top) in mm, origin)
        (f"axial, slice z = {cz}", dose[cz], None if ct is None else ct[cz], lambda m: m[cz],
         (0.0, nx * dx, ny * dy, 0.0), "upper", ("x (mm, patient left →)", "y (mm, posterior ↓)")),
        (f"coronal, slice y = {cy}", dose[:, cy, :], None if ct is None else ct[:, cy, :], lambda m: m[:, cy, :],
         (0.0, nx * dx, 0.0, nz * dz), "lower", ("x (mm, patient left →)", "z (mm, superior ↑)")),
    ]
    fig = Figure(figsize=(11.0, 5.2))
    axes = fig.subplots(1, 2)
    image = None
    for ax, (title, dslice, cslice, cut, extent, origin, labels) in zip(axes, views, strict=True):
        if cslice is not None:
            ax.imshow(cslice, cmap="gray", vmin=-160, vmax=240, extent=extent, origin=origin,
                      interpolation="nearest")
        shown = np.ma.masked_less(dslice, 0.01 * vmax)
        image = ax.imshow(shown, cmap="inferno", norm=norm, alpha=0.75 if cslice is not None else 1.0,
                          extent=extent, origin=origin, interpolation="nearest")
        # contour coordinates: voxel centres in mm
        h, w = dslice.shape
        xs = (np.arange(w) + 0.5) * dx
        ys = (np.arange(h) + 0.5) * (dy if origin == "upper" else dz)
        for i, (_name, mask) in enumerate(outlines):
            m = cut(mask).astype(float)
            if m.any() and m.min() < 1:
                ax.contour(xs, ys, m, levels=[0.5], colors=[_STRUCTURE_COLOURS[i % len(_STRUCTURE_COLOURS)]],
                           linewidths=1.3)
        if levels and np.nanmax(dslice) > min(levels):
            cs = ax.contour(xs, ys, dslice, levels=levels, colors="white", linewidths=0.9, linestyles="dashed")
            ax.clabel(cs, fmt=lambda v: f"{v:.0f} Gy", fontsize=7, inline=True)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(labels[0], fontsize=8)
        ax.set_ylabel(labels[1], fontsize=8)
        ax.tick_params(labelsize=7)
    if image is not None:
        cbar = fig.colorbar(image, ax=list(axes), shrink=0.85, pad=0.02)
        cbar.set_label(f"absorbed dose (Gy), {method}", fontsize=9)
    handles = [
        Line2D([], [], color=_STRUCTURE_COLOURS[i % len(_STRUCTURE_COLOURS)], lw=1.5, label=name)
        for i, (name, _) in enumerate(outlines)
    ]
    if levels:
        handles.append(Line2D([], [], color="0.3", lw=1, ls="--", label="isodose " + ", ".join(
            f"{v:.0f}" for v in levels) + " Gy"))
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False,
                   bbox_to_anchor=(0.45, -0.02))
    return fig


# ====================================================================================== sections
def _section(sid: str, title: str, body: str) -> str:
    return f'<section id="{sid}"><h2>{html.escape(title)}</h2>{body}</section>'


def _header(plan: Plan, generated_utc: str) -> str:
    case = plan.case
    proc = plan.procedure
    hs = plan.highest_severity
    sev = _badge(hs.value) if hs is not None else '<span class="badge" style="background:#2e7d32;color:#fff">no flags</span>'
    device = f", {proc.device}" if proc.device else ""
    date = getattr(case.procedure, "date", None)
    return (
        "<header>"
        f"<h1>embplan plan &mdash; patient {_e(case.patient.id)}</h1>"
        f'<div class="summary-line"><strong>{_e(proc.kind)}</strong> ({_e(proc.territory)}{_e(device)})'
        f" planned for {_e(date)} &nbsp; highest severity: {sev}</div>"
        f'<div class="meta">plan created {_e(plan.provenance.created_utc)} with embplan '
        f"{_e(plan.provenance.embplan_version)}; report generated {_e(generated_utc)}</div>"
        "</header>"
    )


def _flags_section(plan: Plan) -> str:
    flags = sorted(plan.flags, key=lambda f: (-f.severity.rank, f.code))
    if not flags:
        return _section("flags", "Flags", "<p>No rule raised a flag.</p>")
    counts = {}
    for f in flags:
        counts[f.severity.value] = counts.get(f.severity.value, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    rows = []
    for f in flags:
        ctx = (
            f'<div class="context">{html.escape(json.dumps(f.context, ensure_ascii=False, sort_keys=True))}</div>'
            if f.context
            else ""
        )
        rows.append(
            f'<tr class="flag sev-{html.escape(f.severity.value)}"><td>{_badge(f.severity.value)}</td>'
            f"<td><code>{html.escape(f.code)}</code></td>"
            f'<td>{html.escape(f.message)}<div class="evidence">Evidence: {html.escape(f.evidence)}</div>{ctx}</td></tr>'
        )
    table = (
        '<table class="flags"><thead><tr><th>severity</th><th>code</th><th>finding, evidence and values</th></tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table>"
    )
    return _section("flags", "Flags", f"<p>{len(flags)} flag(s): {html.escape(summary)}.</p>{table}")


def _case_section(plan: Plan) -> str:
    data = plan.case.model_dump(mode="json")
    patient = dict(data.get("patient", {}))
    priors = patient.pop("prior_treatments", []) or []
    scalars = [(_label(k), v) for k, v in patient.items() if not isinstance(v, (dict, list))]
    bsa = getattr(plan.case.patient, "body_surface_area_m2", None)
    if isinstance(bsa, (int, float)):
        scalars.append(("body surface area m2 (Du Bois)", float(bsa)))
    parts = ['<div class="grid2"><div><h3>Patient</h3>', _kv_table(scalars)]
    nested = [(k, v) for k, v in patient.items() if isinstance(v, dict)]
    split = next((i for i, (k, _) in enumerate(nested) if k == "disease"), len(nested) // 2)
    for i, (key, value) in enumerate(nested):
        if i == split:
            parts.append("</div><div>")
        parts.append(f"<h3>{html.escape(_label(key).capitalize())}</h3>")
        parts.append(_kv_table((_label(k), v) for k, v in value.items()))
    parts.append("</div></div>")
    parts.append("<h3>Treatment history</h3>")
    if priors:
        cols = ["kind", "date"] + sorted({k for p in priors for k in p} - {"kind", "date"})
        head = "".join(f"<th>{html.escape(_label(c))}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{_e(p.get(c))}</td>" for c in cols) + "</tr>" for p in priors)
        parts.append(f'<table class="history"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
    else:
        parts.append("<p>No earlier treatment recorded.</p>")
    dosi = data.get("dosimetry")
    if isinstance(dosi, dict):
        parts.append("<h3>Dosimetry inputs</h3>")
        parts.append(_kv_table((_label(k), v) for k, v in dosi.items() if v is not None))
    if data.get("thresholds"):
        parts.append("<h3>Threshold overrides given in the case</h3>")
        parts.append(_kv_table((k, v) for k, v in data["thresholds"].items()))
    return _section("case", "Case", "".join(parts))


def _procedure_section(plan: Plan) -> str:
    proc = plan.procedure
    rows = [("procedure", proc.kind), ("territory", proc.territory), ("device", proc.device),
            ("standard protocol", proc.standard_protocol)]
    body = _kv_table(rows)
    if proc.parameters:
        body += "<h3>Parameters</h3>" + _kv_table((_label(k), v) for k, v in proc.parameters.items())
    if proc.deviations:
        items = "".join(f"<li>{html.escape(x)}</li>" for x in proc.deviations)
        body += f'<h3>Deviations from the standard protocol</h3><ul class="deviations">{items}</ul>'
    else:
        body += "<p>No deviation from the standard protocol.</p>"
    seq = plan.sequence
    body += "<h3>Sequencing (TAE &rarr; TACE &rarr; TARE)</h3>" + _kv_table([
        ("follows the ladder", seq.follows_ladder),
        ("skipped steps", list(seq.skipped)),
        ("justifications", list(seq.justifications)),
        ("suggested next step", seq.suggested_next),
    ])
    if seq.explanation:
        body += f"<p>{html.escape(seq.explanation)}</p>"
    return _section("procedure", "Procedure and protocol", body)


def _prescription_section(plan: Plan) -> str:
    d = plan.dosimetry
    if d is None:
        return _section("prescription", "Prescription", "<p>No radioembolization: no activity prescription.</p>")
    rx = d.prescription
    rows = [
        ("model", rx.method),
        ("prescribed activity (GBq)", rx.activity_gbq),
        ("activity for the target (GBq)", rx.activity_for_target_gbq),
        ("largest activity within limits (GBq)", rx.max_safe_activity_gbq),
        ("binding constraint", rx.binding_constraint),
        ("lung shunt activity reduction", f"{100 * rx.lung_shunt_reduction_fraction:.0f} %"),
        ("K (Gy kg / GBq)", rx.k_gy_kg_per_gbq),
        ("lung shunt fraction", d.lung_shunt_fraction),
        ("tumour-to-normal ratio", d.tumor_to_normal_ratio),
    ]
    body = _kv_table(rows)
    if rx.conflict:
        body += ('<p class="conflict">Conflict: the target cannot be reached within the limits; the activity is '
                 "capped by the binding constraint.</p>")
    if rx.explanation:
        body += f"<p>{html.escape(rx.explanation)}</p>"
    if d.delivery is not None:
        body += "<h3>Delivery</h3><p>" + html.escape(d.delivery.explanation) + "</p>"
    if rx.inputs:
        body += "<h3>Model inputs</h3>" + _kv_table((_label(k), v) for k, v in rx.inputs.items())
    limits = d.limits.model_dump(mode="json")
    body += "<h3>Limits in force</h3>" + _kv_table((_label(k), v) for k, v in limits.items() if v is not None)
    if d.notes:
        body += "<h3>Notes</h3><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in d.notes) + "</ul>"
    return _section("prescription", "Prescription", body)


def _dose_section(plan: Plan) -> str:
    d = plan.dosimetry
    if d is None:
        return ""
    c, v = d.compartment, d.voxel
    rows = [
        ("tumour", c.tumor_gy, v.tumor_gy if v else None),
        ("non-tumour liver", c.normal_liver_gy, v.normal_liver_gy if v else None),
        ("perfused liver", c.perfused_gy, v.perfused_gy if v else None),
        ("perfused non-tumour liver", c.perfused_normal_liver_gy, v.perfused_normal_liver_gy if v else None),
        ("lung", c.lung_gy, v.lung_gy if v else None),
    ]
    vox_head = f"voxel ({html.escape(d.method)})" if v is not None else "voxel"
    body_rows = "".join(
        f"<tr><th>{html.escape(name)}</th><td class='num'>{_num(a, 1)}</td><td class='num'>{_num(b, 1)}</td></tr>"
        for name, a, b in rows
        if a is not None or b is not None
    )
    table = (
        '<table class="doses"><thead><tr><th>mean absorbed dose (Gy)</th>'
        f'<th class="num">compartment ({html.escape(c.source)})</th><th class="num">{vox_head}</th></tr></thead>'
        f"<tbody>{body_rows}</tbody></table>"
    )
    body = (
        f"<p>Activity {_num(d.activity_gbq, 2)} GBq. The reported doses (source: {html.escape(d.source)}) "
        f"are tumour {_num(d.tumor_dose_gy, 1)} Gy, non-tumour liver {_num(d.normal_liver_dose_gy, 1)} Gy, "
        f"perfused {_num(d.perfused_dose_gy, 1)} Gy, lung {_num(d.lung_dose_gy, 1)} Gy.</p>{table}"
    )
    if d.structures:
        srows = "".join(
            f"<tr><td>{html.escape(s.structure)}</td><td class='num'>{_num(s.volume_ml, 1)}</td>"
            f"<td class='num'>{_num(s.mass_kg, 3)}</td><td class='num'>{_num(s.mean_gy, 1)}</td>"
            f"<td class='num'>{_num(s.bed_gy, 1)}</td></tr>"
            for s in d.structures
        )
        body += (
            '<h3>Structures</h3><table class="structures"><thead><tr><th>structure</th><th class="num">volume (mL)'
            '</th><th class="num">mass (kg)</th><th class="num">mean dose (Gy)</th><th class="num">BED (Gy)</th>'
            f"</tr></thead><tbody>{srows}</tbody></table>"
        )
    if d.volumes_ml:
        body += "<h3>Volumes (mL)</h3>" + _kv_table((_label(k), v) for k, v in d.volumes_ml.items())
    return _section("doses", "Absorbed doses", body)


def _dvh_section(plan: Plan) -> str:
    d = plan.dosimetry
    if d is None or not d.dvh:
        return ""
    fig = dvh_figure(plan)
    body = ""
    if fig is not None:
        body += _img(fig, "cumulative dose-volume histograms",
                     "Cumulative DVH of the main structures (every structure is in the tables); dashed: limits.",
                     "dvh-plot")
    keys_d = sorted({k for r in d.dvh.values() for k in r.d_gy}, key=_metric_order)
    keys_v = sorted({k for r in d.dvh.values() for k in r.v_percent}, key=_metric_order)
    head = "".join(f'<th class="num">{html.escape(k)}</th>' for k in keys_d)
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td><td class='num'>{_num(r.volume_ml, 1)}</td>"
        f"<td class='num'>{_num(r.mean_gy, 1)}</td><td class='num'>{_num(r.min_gy, 1)}</td>"
        f"<td class='num'>{_num(r.max_gy, 1)}</td>"
        + "".join(f"<td class='num'>{_num(r.d_gy.get(k), 1)}</td>" for k in keys_d)
        + "</tr>"
        for name, r in d.dvh.items()
    )
    body += (
        '<h3>Dose (Gy): mean, range, and D<i>x</i> (the least dose to the hottest <i>x</i> % of the volume)</h3>'
        '<table class="dvh-metrics dvh-dose"><thead><tr><th>structure</th><th class="num">volume (mL)</th>'
        '<th class="num">mean</th><th class="num">min</th><th class="num">max</th>'
        f"{head}</tr></thead><tbody>{rows}</tbody></table>"
    )
    if keys_v:
        head_v = "".join(f'<th class="num">{html.escape(k)}</th>' for k in keys_v)
        rows_v = "".join(
            f"<tr><td>{html.escape(name)}</td>"
            + "".join(f"<td class='num'>{_num(r.v_percent.get(k), 1)}</td>" for k in keys_v)
            + "</tr>"
            for name, r in d.dvh.items()
        )
        body += (
            "<h3>Volume (%) receiving at least the stated dose</h3>"
            '<table class="dvh-metrics dvh-volume"><thead><tr><th>structure</th>'
            f"{head_v}</tr></thead><tbody>{rows_v}</tbody></table>"
        )
    return _section("dvh", "Dose-volume histograms", body)


def _metric_order(key: str) -> tuple[float, str]:
    digits = "".join(ch for ch in key if ch.isdigit() or ch == ".")
    try:
        return (-float(digits), key)
    except ValueError:
        return (0.0, key)


def _slices_section(plan: Plan) -> str:
    fig = dose_slice_figure(plan)
    if fig is None:
        return ""
    caption = (
        "Dose map over the CT through the dose-weighted centre of the tumours; solid lines: structure outlines; "
        "dashed lines: isodoses."
    )
    return _section("slices", "Dose slices", _img(fig, "axial and coronal dose slices", caption, "dose-slices"))


def _thresholds_section(plan: Plan) -> str:
    thr = plan.thresholds
    rows = thr.describe() if hasattr(thr, "describe") else [
        {"name": k, "value": v, "unit": "", "source": "", "overridden": False}
        for k, v in thr.model_dump(mode="json").items()
    ]
    body_rows = "".join(
        f'<tr class="{"overridden" if r.get("overridden") else ""}"><td><code>{html.escape(str(r["name"]))}</code></td>'
        f"<td class='num'>{_e(r.get('value'))}</td><td>{html.escape(str(r.get('unit', '')))}</td>"
        f"<td>{'overridden' if r.get('overridden') else 'default'}</td>"
        f"<td class='evidence'>{html.escape(str(r.get('source', '')))}</td></tr>"
        for r in rows
    )
    n_over = sum(1 for r in rows if r.get("overridden"))
    table = (
        '<table class="thresholds"><thead><tr><th>threshold</th><th class="num">value</th><th>unit</th>'
        f"<th>origin</th><th>source</th></tr></thead><tbody>{body_rows}</tbody></table>"
    )
    body = f"<p>{len(rows)} thresholds, {n_over} overridden (highlighted).</p>"
    body += f"<details><summary>Show every threshold with its source</summary>{table}</details>"
    return _section("thresholds", "Thresholds used", body)


def _provenance_section(plan: Plan) -> str:
    p = plan.provenance
    rows = [
        ("embplan version", p.embplan_version),
        ("Python", p.python_version),
        ("plan created (UTC)", p.created_utc),
    ]
    rows += [(name, version) for name, version in sorted(p.dependency_versions.items())]
    body = _kv_table(rows)
    if p.rules_run:
        body += f"<p>Rules run ({len(p.rules_run)}): {html.escape(', '.join(p.rules_run))}.</p>"
    if p.kernel:
        kernel_json = json.dumps(p.kernel, indent=2, ensure_ascii=False, sort_keys=True, default=str)
        body += f"<details><summary>Dose kernel and its parameters</summary><pre>{html.escape(kernel_json)}</pre></details>"
    case_json = json.dumps(plan.case_source, indent=2, ensure_ascii=False, default=str)
    body += f"<details><summary>The case as given</summary><pre>{html.escape(case_json)}</pre></details>"
    return _section("provenance", "Provenance", body)


# ====================================================================================== public
def render_report(plan: Plan, *, generated_utc: str | None = None) -> str:
    """The report of ``plan`` as one self-contained HTML document (UTF-8 text)."""
    generated = generated_utc or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    sections = [
        _header(plan, generated),
        _flags_section(plan),
        _case_section(plan),
        _procedure_section(plan),
        _prescription_section(plan),
        _dose_section(plan),
        _dvh_section(plan),
        _slices_section(plan),
        _thresholds_section(plan),
        _provenance_section(plan),
        f'<footer id="disclaimer"><strong>Disclaimer.</strong> {html.escape(DISCLAIMER)}</footer>',
    ]
    title = f"embplan plan - {plan.case.patient.id} - {plan.procedure.kind}"
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="embplan {html.escape(plan.provenance.embplan_version)}">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        + "\n".join(s for s in sections if s)
        + "\n</body></html>\n"
    )


def write_report(plan: Plan, path: str | Path, *, generated_utc: str | None = None) -> Path:
    """Render the report and write it to ``path`` atomically; return the path."""
    from .io import atomic_write_text, check_output_path

    check_output_path(path, error=EmbplanError, what="report")  # fail before rendering
    text = render_report(plan, generated_utc=generated_utc)
    return atomic_write_text(path, text, error=EmbplanError, what="report")
