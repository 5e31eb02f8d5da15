"""The verification report: one self-contained HTML file (inline CSS, figures as embedded PNG) that shows the
delivered dose beside the plan.

:func:`render_verification_report` takes a :class:`~embplan.verify.Verification` (or a
:class:`~embplan.io.verification.VerificationFile` read back) and returns the HTML text. Sections: header (patient,
delivered vs planned activity, flags count), flags (as delivered), registration quality, delivered activity and
calibration, planned vs delivered per structure (mean, D95/D70/D50/D2, differences), overlaid DVHs, the difference
map (three orthogonal slices through the largest under-dose of a tumour, with the liver and tumour outlines),
activity outside liver and lungs, the gamma index when computed, the prior-treatment record for the next plan,
notes and provenance. Figures are drawn off-screen (matplotlib Agg); every piece of text is escaped.

Standalone on purpose (the plan report is being rebuilt as a package; this module does not depend on it).
"""

from __future__ import annotations

import base64
import html
import io
import json
from typing import Any, Literal

import numpy as np

__all__ = ["render_verification_report", "dvh_overlay_figure", "difference_map_figure", "registration_figure",
           "DISCLAIMER"]

DISCLAIMER = (
    "embplan is research software. The delivered dose is computed from post-treatment images whose resolution, "
    "noise, calibration and registration all limit it; Y-90 PET and bremsstrahlung SPECT quantify poorly at low "
    "activity concentrations (lungs). This report supports, and does not replace, the judgement of the treating "
    "team."
)
_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, Arial, sans-serif; color:#1b1f24; margin:0 auto;
       max-width:1100px; padding:24px 28px 48px; line-height:1.45; font-size:14px; }
header { border-bottom:3px solid #1b1f24; padding-bottom:12px; margin-bottom:8px; }
h1 { margin:0 0 4px; font-size:24px; } h2 { font-size:18px; border-bottom:1px solid #d5dae0; margin-top:28px; }
.meta, .note { color:#5b6570; } table { border-collapse:collapse; margin:8px 0; width:100%; }
th, td { border:1px solid #d5dae0; padding:4px 8px; text-align:right; } th { background:#f3f5f7; }
td:first-child, th:first-child { text-align:left; } .neg { color:#c62828; } .pos { color:#1565c0; }
.flag { border-left:6px solid; padding:6px 10px; margin:6px 0; background:#f8f9fa; }
.warning { border-color:#c62828; } .contraindication { border-color:#7f0000; } .caution { border-color:#f9a825; }
.info { border-color:#1565c0; } img { max-width:100%; } figure { margin:12px 0; } figcaption { color:#5b6570; }
pre { background:#f3f5f7; padding:8px; overflow-x:auto; font-size:12px; }
"""
_DVH_STRUCTURES = ("perfused_tumors", "perfused_normal_liver", "normal_liver", "lungs")


def _e(v: Any) -> str:
    return html.escape("" if v is None else str(v), quote=True)


def _n(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _png(fig: Any) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(fig: Any, alt: str, caption: str) -> str:
    if fig is None:
        return ""
    return f'<figure><img alt="{_e(alt)}" src="{_png(fig)}"><figcaption>{_e(caption)}</figcaption></figure>'


def dvh_overlay_figure(result: Any, structures: tuple[str, ...] | None = None) -> Any:
    """Cumulative DVHs, planned (dashed) and delivered (solid), one colour per structure."""
    from matplotlib.figure import Figure

    pairs = {p.structure: p for p in result.dvh}
    names = [s for s in (structures or _DVH_STRUCTURES) if s in pairs]
    planned = {row.structure: row.planned_mean_gy for row in result.structures}
    names += [s for s in pairs if s.startswith("tumor_") and s not in names and planned.get(s, 0.0) > 0]
    if not names:
        return None
    from matplotlib import colormaps

    fig = Figure(figsize=(9.0, 4.6))
    ax = fig.add_subplot(1, 1, 1)
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    for i, name in enumerate(names):
        p = pairs[name]
        c = cmap(i % cmap.N)
        ax.plot(p.planned_dose_gy, np.asarray(p.planned_volume_fraction) * 100, "--", color=c, lw=1.4)
        ax.plot(p.delivered_dose_gy, np.asarray(p.delivered_volume_fraction) * 100, "-", color=c, lw=1.8, label=name)
    ax.set_xlabel("Dose (Gy)")
    ax.set_ylabel("Volume (%)")
    ax.set_ylim(0, 101)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="solid: delivered\ndashed: planned", title_fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0))
    return fig


def difference_map_figure(arrays: dict[str, np.ndarray], result: Any) -> Any:
    """Delivered minus planned dose (Gy) on three orthogonal slices through the centroid of the structure with the
    largest relative under-dose among the tumours (else the liver's), outlines of liver and tumours."""
    from matplotlib.figure import Figure

    diff = arrays.get("difference_gy")
    if diff is None:
        return None
    masks = {k[len("mask_"):]: np.asarray(v, bool) for k, v in arrays.items() if k.startswith("mask_")}
    tumours = [r for r in result.structures if r.structure.startswith("tumor_") and r.difference_percent is not None]
    focus = min(tumours, key=lambda r: r.difference_percent).structure if tumours else "liver"
    m = masks.get(focus, masks.get("liver"))
    centre = np.argwhere(m).mean(axis=0).round().astype(int) if m is not None and m.any() else \
        (np.array(diff.shape) // 2)
    lim = float(np.percentile(np.abs(diff[masks["liver"]]), 99)) if "liver" in masks and masks["liver"].any() else \
        float(np.abs(diff).max())
    lim = max(lim, 1.0)
    fig = Figure(figsize=(11.0, 4.0))
    views = [("axial", lambda a: a[centre[0]]), ("coronal", lambda a: a[:, centre[1], :]),
             ("sagittal", lambda a: a[:, :, centre[2]])]
    im = None
    for i, (label, cut) in enumerate(views):
        ax = fig.add_subplot(1, 3, i + 1)
        origin: Literal["upper", "lower"] = "upper" if label == "axial" else "lower"
        im = ax.imshow(cut(diff), cmap="RdBu", vmin=-lim, vmax=lim, origin=origin, interpolation="nearest")
        for name, colour in (("liver", "#333333"), ("tumors", "#ff9100"), (focus, "#000000"), ("lungs", "#777777")):
            if name in masks and cut(masks[name]).any():
                ax.contour(cut(masks[name]).astype(float), levels=[0.5], colors=colour, linewidths=0.8,
                           origin=origin)
        ax.set_title(f"{label} through {focus}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=fig.axes, shrink=0.8, label="delivered - planned (Gy)")
    return fig


def registration_figure(arrays: dict[str, np.ndarray]) -> Any:
    """The planning CT (grey) with the outlines of the registered post-treatment CT (body and lungs at -400 HU, red)
    and of the planned liver (cyan), axial and coronal through the liver's centre: a misregistration shows as red
    lines off the grey edges."""
    from matplotlib.figure import Figure

    plan_ct, post_ct = arrays.get("plan_ct_hu"), arrays.get("post_ct_hu")
    liver = arrays.get("mask_liver")
    if plan_ct is None or post_ct is None or liver is None or not np.asarray(liver).any():
        return None
    c = np.argwhere(liver).mean(axis=0).round().astype(int)
    fig = Figure(figsize=(10.0, 4.2))
    cuts: list[tuple[str, Any, Literal["upper", "lower"]]] = [
        ("axial", lambda a: a[c[0]], "upper"), ("coronal", lambda a: a[:, c[1], :], "lower")]
    for i, (label, cut, origin) in enumerate(cuts):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.imshow(cut(plan_ct), cmap="gray", vmin=-1000, vmax=400, origin=origin, interpolation="nearest")
        ax.contour(cut(post_ct), levels=[-400.0], colors="#ff1744", linewidths=0.8, linestyles="solid", origin=origin)
        ax.contour(cut(np.asarray(liver, dtype=float)), levels=[0.5], colors="#00e5ff", linewidths=0.8, origin=origin)
        ax.set_title(f"{label}: planning CT, registered post CT (red), planned liver (cyan)", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def _structures_table(result: Any) -> str:
    rows = []
    for r in result.structures:
        cls = "neg" if r.difference_gy < 0 else "pos"
        pct = "-" if r.difference_percent is None else f"{r.difference_percent:+.1f} %"
        dvals = " / ".join(f"{r.planned_d_gy.get(k, 0):.0f}&rarr;{r.delivered_d_gy.get(k, 0):.0f}"
                           for k in ("D95", "D70", "D50", "D2"))
        rows.append(f"<tr><td>{_e(r.structure)}</td><td>{r.volume_ml:.1f}</td><td>{r.planned_mean_gy:.1f}</td>"
                    f"<td>{r.delivered_mean_gy:.1f}</td><td class='{cls}'>{r.difference_gy:+.1f}</td>"
                    f"<td class='{cls}'>{pct}</td><td>{dvals}</td><td>{r.planned_activity_mbq:.0f}</td>"
                    f"<td>{r.delivered_activity_mbq:.0f}</td><td>{r.coverage_fraction:.0%}</td></tr>")
    return ("<table><tr><th>structure</th><th>volume (mL)</th><th>planned mean (Gy)</th><th>delivered mean (Gy)</th>"
            "<th>difference (Gy)</th><th>difference</th><th>D95 / D70 / D50 / D2 planned&rarr;delivered (Gy)</th>"
            "<th>planned activity (MBq)</th><th>delivered activity (MBq)</th><th>in the image's field of view</th>"
            "</tr>" + "".join(rows) + "</table>")


def _kv(rows: list[tuple[str, Any]]) -> str:
    return "<table>" + "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows) + "</table>"


def render_verification_report(verification: Any) -> str:
    """The HTML text of the verification report (see the module docstring)."""
    r = verification.result
    arrays = verification.arrays
    d = r.delivered
    q = r.registration.get("quality", {})
    t = r.registration.get("transform", {})
    flags = "".join(
        f"<div class='flag {_e(f.severity)}'><b>{_e(f.code)}</b> ({_e(f.severity)}): {_e(f.message)}"
        f"<div class='note'>Evidence: {_e(f.evidence)}</div></div>" for f in r.flags
    ) or "<p>No flag as delivered.</p>"

    def qf(key: str, digits: int = 3) -> str:
        v = q.get(key)
        return "-" if v is None else f"{v:.{digits}f}"

    reg = _kv([
        ("source", r.registration.get("source")),
        ("method", r.registration.get("method")),
        ("rotation (deg), Euler x/y/z", f"{t.get('rotation_deg', 0):.2f}; " +
         ", ".join(f"{a:.2f}" for a in t.get("euler_angles_deg_xyz", []))),
        ("translation (mm)", ", ".join(f"{a:.1f}" for a in t.get("translation_mm", []))),
        ("Mattes MI before -> after (lower is better)", f"{qf('mattes_mi_before')} -> {qf('mattes_mi_after')}"),
        ("CT correlation before -> after", f"{qf('correlation_before', 2)} -> {qf('correlation_after', 2)}"),
        ("liver mean surface distance before -> after (mm)",
         f"{qf('liver_msd_before_mm', 1)} -> {qf('liver_msd_after_mm', 1)}"),
        ("liver Dice before -> after", f"{qf('liver_dice_before', 3)} -> {qf('liver_dice_after', 3)}"),
        ("overlap of the planning body with the post CT", qf("overlap_fraction", 3)),
    ])
    cal = r.calibration
    act = _kv([
        ("delivery record", d.explanation),
        ("delivered activity (GBq)", f"{d.delivered_activity_gbq:.3f}"),
        ("planned activity (GBq)", f"{d.planned_activity_gbq:.3f}"),
        ("delivered - planned", "-" if d.delivered_minus_planned_percent is None else
         f"{d.delivered_minus_planned_percent:+.1f} %"),
        ("emission image", r.emission.upper()),
        ("calibration", cal.get("method")),
        ("activity on the planning grid (MBq)", f"{r.activity_on_grid_mbq:.0f}"),
        ("lung shunt planned (MAA) -> delivered", f"{r.lung_shunt_planned_fraction:.1%} -> "
                                                   f"{r.lung_shunt_delivered_fraction:.1%}"),
        ("activity outside liver and lungs (beyond the margin)", f"{r.activity_outside_fraction:.1%}"),
        ("dose method (delivered and planned)", f"{r.dose_method}; planned map: {r.planned_dose_source}"),
    ])
    deposits = "".join(
        f"<tr><td>{i + 1}</td><td>{dep.activity_mbq:.0f}</td><td>{dep.fraction_of_delivered:.2%}</td>"
        f"<td>{dep.volume_ml:.1f}</td><td>{', '.join(f'{v:.0f}' for v in dep.centroid_plan_mm)}</td>"
        f"<td>{', '.join(f'{v:.0f}' for v in dep.centroid_post_mm)}</td><td>{_e(dep.nearest_structure)} "
        f"({dep.distance_to_nearest_mm:.0f} mm)</td><td>{'yes' if dep.flagged else 'no'}</td></tr>"
        for i, dep in enumerate(r.deposits)
    )
    deposits_html = ("<table><tr><th>#</th><th>activity (MBq)</th><th>of delivered</th><th>volume (mL)</th>"
                     "<th>centroid, planning frame (mm)</th><th>centroid, post frame (mm)</th><th>nearest</th>"
                     f"<th>flagged</th></tr>{deposits}</table>") if deposits else "<p>No deposit found.</p>"
    gamma = ""
    if r.gamma is not None:
        g = r.gamma
        s = g.settings
        gamma = ("<h2>Gamma index (planned reference, delivered evaluated)</h2>" + _kv([
            ("criteria", f"{s.dose_percent:g} % ({'local' if s.local else 'global'}) / {s.distance_mm:g} mm, cut-off "
                         f"{s.cutoff_percent:g} % of {g.reference_max_gy:.0f} Gy"),
            ("voxels evaluated", g.evaluated_voxels),
            ("pass rate (gamma <= 1)", "-" if g.pass_rate is None else f"{g.pass_rate:.1%}"),
            ("mean gamma; 95th percentile", f"{_n(g.mean_gamma, 2)}; {_n(g.gamma_p95, 2)}"),
        ]))
    dl, pl = r.delivered_doses, r.planned_doses
    labels = {"tumor_dose_gy": "tumours (perfused)", "normal_liver_dose_gy": "non-tumour liver (whole)",
              "perfused_normal_liver_dose_gy": "non-tumour liver (perfused)", "perfused_dose_gy": "perfused territory",
              "lung_dose_gy": "lungs"}
    summary = _kv([(labels.get(k, k), f"{_n(pl.get(k))} -> {_n(dl.get(k))} Gy") for k in dl])
    notes = "".join(f"<li>{_e(n)}</li>" for n in r.notes)
    body = f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">
<title>embplan verification: {_e(r.patient_id)}</title><style>{_CSS}</style></head><body>
<header><h1>Post-treatment verification: delivered vs planned</h1>
<div class="meta">Patient {_e(r.patient_id)}; {_e(r.device)} Y-90; administration {_e(d.administration_datetime)};
delivered {d.delivered_activity_gbq:.3f} GBq (planned {d.planned_activity_gbq:.3f} GBq); {len(r.flags)} flag(s) as
delivered; plan created {_e(r.plan_created_utc)}</div></header>
<h2>Flags as delivered</h2>{flags}
<h2>Mean doses, planned -> delivered</h2>{summary}
<h2>Planned vs delivered per structure</h2>{_structures_table(r)}
<p class="note">Mass-weighted mean absorbed doses; D-values from the cumulative DVHs (bin 0.5 Gy). The planned map is
the plan's {_e(r.dose_method)} map; the delivered map uses the same method on the post-treatment activity.</p>
<h2>Dose-volume histograms</h2>{_figure(dvh_overlay_figure(r), "DVH overlay", "Cumulative DVHs: planned dashed, delivered solid.")}
<h2>Difference map</h2>{_figure(difference_map_figure(arrays, r), "difference map", "Delivered minus planned dose (Gy), planning frame; blue: more delivered, red: less.")}
<h2>Activity outside the liver and lungs</h2>{deposits_html}
{gamma}
<h2>Registration (post-treatment CT to planning CT)</h2>{reg}
{_figure(registration_figure(arrays), "registration check", "The registered post-treatment CT outlined on the planning CT.")}
<h2>Delivered activity and calibration</h2>{act}
<h2>For the next plan: prior-treatment record</h2>
<p class="note">Paste into <code>patient.prior_treatments</code> of the next case: its lung dose counts toward the
cumulative lung limit.</p><pre>{_e(json.dumps(r.prior_treatment, indent=2))}</pre>
<h2>Notes</h2><ul>{notes}</ul>
<h2>Provenance</h2><pre>{_e(json.dumps(r.provenance, indent=2, default=str))}</pre>
<p class="note">{_e(DISCLAIMER)}</p>
</body></html>
"""
    return body
