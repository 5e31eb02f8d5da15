"""The report's figures: matplotlib figures drawn off-screen (Agg canvas, no pyplot state), embedded as PNG.

:func:`dvh_figure` draws the cumulative DVHs with every limit and target in force (from
:func:`embplan.report.doses.dose_marks`), labelled without overlap; :func:`dose_slice_figure` draws an axial and a
coronal dose slice with structure outlines and isodoses (a static companion of the slice viewer, for scripts).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .doses import dose_marks
from .fmt import structure_label

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from ..plan_model import Plan

__all__ = [
    "dvh_figure",
    "dose_slice_figure",
    "figure_png",
    "img_tag",
    "DEFAULT_ISODOSE_LEVELS_GY",
    "OUTLINE_STRUCTURES",
    "DVH_PLOT_STRUCTURES",
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

_STRUCTURE_COLOURS = ("#00e5ff", "#76ff03", "#ff4081", "#ffea00", "#e040fb", "#ff9100", "#ffffff")
_ISO_COLOURS = ("#ffffff", "#b2ff59", "#40c4ff", "#ff80ab", "#ffd740", "#ea80fc")


def figure_png(fig: Figure, *, dpi: int = 110) -> str:
    """A figure as a base64 PNG data URI (Agg canvas)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def img_tag(fig: Figure, alt: str, caption: str, cls: str) -> str:
    """A ``<figure>`` with the figure as an embedded PNG; ``caption`` is HTML."""
    return (
        f'<figure class="{cls}"><img alt="{html.escape(alt)}" src="{figure_png(fig)}">'
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
    fig = Figure(figsize=(9.0, 4.6))
    ax = fig.add_subplot(1, 1, 1)
    xmax = 0.0
    for i, (name, rec) in enumerate((n, d.dvh[n]) for n in names):
        dose = np.asarray(rec.dose_gy, dtype=float)
        vol = 100.0 * np.asarray(rec.volume_fraction, dtype=float)
        if dose.size == 0:
            continue
        xmax = max(xmax, float(np.nanmax(dose)))
        ax.plot(dose, vol, drawstyle="steps-post", lw=2, color=f"C{i % 10}",
                label=f"{structure_label(name)} (mean {rec.mean_gy:.1f} Gy)")
    marks = dose_marks(plan)
    xmax = max([xmax] + [v * 1.08 for v, _ in marks]) or 1.0
    ax.set_xlim(0, xmax)
    ax.set_ylim(0, 105)
    # every limit and target in force: a dashed line, its label written along it; labels of lines closer than
    # 4 % of the axis are stacked at different heights so that no two overlap
    last_x = -math.inf
    tier = 0
    for value, label in marks:
        tier = tier + 1 if (value - last_x) < 0.04 * xmax else 0
        last_x = value
        ax.axvline(value, color="0.25", ls="--", lw=1)
        ax.text(value, 3 + 34 * (tier % 3), f" {label} {value:.0f} Gy", rotation=90, fontsize=8, color="0.15",
                ha="right", va="bottom", bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 1})
    ax.set_xlabel("absorbed dose (Gy)")
    ax.set_ylabel("volume receiving at least that dose (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return fig


def _isodose_levels(plan: Plan, levels: Sequence[float] | None, max_dose: float) -> list[float]:
    """The isodose levels drawn: ``levels``, else every limit and target in force (:func:`dose_marks`), else
    :data:`DEFAULT_ISODOSE_LEVELS_GY`; only those between 0 and ``max_dose``."""
    if levels is None:
        found = [v for v, _ in dose_marks(plan)]
        levels = found if found else list(DEFAULT_ISODOSE_LEVELS_GY)
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
        return tuple(n // 2 for n in dose.shape)
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
            # one colour per level, named in the legend (no inline labels to collide)
            ax.contour(xs, ys, dslice, levels=levels, colors=[_ISO_COLOURS[i % len(_ISO_COLOURS)] for i in
                                                              range(len(levels))], linewidths=1.0,
                       linestyles="dashed")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(labels[0], fontsize=8)
        ax.set_ylabel(labels[1], fontsize=8)
        ax.tick_params(labelsize=7)
    if image is not None:
        cbar = fig.colorbar(image, ax=list(axes), shrink=0.85, pad=0.02)
        cbar.set_label(f"absorbed dose (Gy), {method}", fontsize=9)
    handles = [
        Line2D([], [], color=_STRUCTURE_COLOURS[i % len(_STRUCTURE_COLOURS)], lw=1.5, label=structure_label(name))
        for i, (name, _) in enumerate(outlines)
    ]
    handles += [Line2D([], [], color=_ISO_COLOURS[i % len(_ISO_COLOURS)], lw=1, ls="--",
                       label=f"{v:.0f} Gy isodose") for i, v in enumerate(levels)]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False,
                   bbox_to_anchor=(0.45, -0.02))
    return fig
